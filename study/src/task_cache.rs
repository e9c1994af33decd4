//! What a task shows that never changes: an item's descriptions (id and text) and images. Both
//! are written once, in the transaction that creates the study (`setup::create_study`), and never
//! updated or deleted (responses and ratings reference them), so a server keeps them in memory
//! and a task costs no read for them after the item's first.
//!
//! One cache per database (the server's [`crate::submit::SubmissionQueue`] holds it): keys are
//! row ids, which mean nothing in another database.

use crate::error::{Result, StudyError};
use crate::types::{TaskDescription, TaskImage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Items kept before the cache starts over (a bound on memory: about 2 kB an item).
const MAX_ITEMS: usize = 100_000;

/// An item's descriptions (by id) and images (in display position).
#[derive(Debug)]
pub struct ItemContent {
    pub descriptions: Vec<TaskDescription>,
    pub images: Vec<TaskImage>,
}

impl ItemContent {
    /// The description ids, ascending.
    pub fn description_ids(&self) -> Vec<i64> {
        self.descriptions.iter().map(|d| d.id).collect()
    }

    /// The descriptions in a task's display order (ids unknown to the item are left out).
    pub fn in_order(&self, order: &[i64]) -> Vec<TaskDescription> {
        order.iter().filter_map(|id| self.descriptions.iter().find(|d| d.id == *id)).cloned().collect()
    }
}

/// An item's descriptions and images as two JSON array columns (what [`TaskCache::insert_json`]
/// reads), for the item id in SQL parameter `$item` (e.g. `"?1"`), so a caller can fetch them in
/// the same statement as something else.
macro_rules! item_content_columns {
    ($item:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(id, text)) FROM study_descriptions WHERE item_id = ",
            $item,
            "), (SELECT json_group_array(json_array(s.position, im.sha256, s.crop_x0, s.crop_y0, s.crop_x1, s.crop_y1))
                 FROM study_item_images s JOIN images im ON im.id = s.image_id WHERE s.item_id = ",
            $item,
            ")"
        )
    };
}
pub(crate) use item_content_columns;

#[derive(Clone, Default)]
pub struct TaskCache {
    items: Arc<Mutex<HashMap<i64, Arc<ItemContent>>>>,
}

impl TaskCache {
    /// The content of item `item_id` if it is cached.
    pub fn get(&self, item_id: i64) -> Option<Arc<ItemContent>> {
        self.items.lock().expect("task cache lock").get(&item_id).cloned()
    }

    /// Caches item `item_id` from the two columns of [`item_content_columns`].
    pub fn insert_json(&self, item_id: i64, descriptions: &str, images: &str) -> Result<Arc<ItemContent>> {
        let content = Arc::new(parse(item_id, descriptions, images)?);
        let mut items = self.items.lock().expect("task cache lock");
        if items.len() >= MAX_ITEMS {
            items.clear();
        }
        items.insert(item_id, content.clone());
        Ok(content)
    }
}

fn parse(item_id: i64, descriptions: &str, images: &str) -> Result<ItemContent> {
    let unreadable =
        |e: serde_json::Error| StudyError::Invalid(format!("item {item_id}: stored content unreadable: {e}"));
    let mut descriptions: Vec<(i64, String)> = serde_json::from_str(descriptions).map_err(unreadable)?;
    descriptions.sort_unstable_by_key(|d| d.0);
    type ImageRow = (i64, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let mut images: Vec<ImageRow> = serde_json::from_str(images).map_err(unreadable)?;
    images.sort_unstable_by_key(|i| i.0);
    Ok(ItemContent {
        descriptions: descriptions.into_iter().map(|(id, text)| TaskDescription { id, text }).collect(),
        images: images
            .into_iter()
            .map(|(_, sha256, x0, y0, x1, y1)| TaskImage {
                sha256,
                crop: match (x0, y0, x1, y1) {
                    (Some(x0), Some(y0), Some(x1), Some(y1)) => Some([x0, y0, x1, y1]),
                    _ => None,
                },
            })
            .collect(),
    })
}
