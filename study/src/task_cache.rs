//! What a task shows that never changes: an item's descriptions (id and text) and images. Both
//! are written once, in the transaction that creates the study (`setup::create_study`), and never
//! updated or deleted (responses and ratings reference them), so a server keeps them in memory
//! and a task costs no read for them after the item's first.
//!
//! One cache per database (the server's [`crate::submit::SubmissionQueue`] holds it): keys are
//! row ids, which mean nothing in another database.

use crate::error::{Result, StudyError};
use crate::types::{TaskDescription, TaskImage};
use sqlx::SqliteConnection;
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

#[derive(Clone, Default)]
pub struct TaskCache {
    items: Arc<Mutex<HashMap<i64, Arc<ItemContent>>>>,
}

impl TaskCache {
    /// The content of item `item_id`, read on `conn` (one query) the first time.
    pub async fn item(&self, conn: &mut SqliteConnection, item_id: i64) -> Result<Arc<ItemContent>> {
        if let Some(found) = self.items.lock().expect("task cache lock").get(&item_id) {
            return Ok(found.clone());
        }
        let content = Arc::new(load(conn, item_id).await?);
        let mut items = self.items.lock().expect("task cache lock");
        if items.len() >= MAX_ITEMS {
            items.clear();
        }
        items.insert(item_id, content.clone());
        Ok(content)
    }
}

/// Both lists in one row (one round trip to SQLite's thread), as JSON arrays.
async fn load(conn: &mut SqliteConnection, item_id: i64) -> Result<ItemContent> {
    let (descriptions, images): (String, String) = sqlx::query_as(
        "SELECT (SELECT json_group_array(json_array(id, text)) FROM study_descriptions WHERE item_id = ?1),
                (SELECT json_group_array(json_array(s.position, im.sha256, s.crop_x0, s.crop_y0, s.crop_x1, s.crop_y1))
                 FROM study_item_images s JOIN images im ON im.id = s.image_id WHERE s.item_id = ?1)",
    )
    .bind(item_id)
    .fetch_one(&mut *conn)
    .await?;
    let unreadable = |e: serde_json::Error| StudyError::Invalid(format!("item {item_id}: stored content unreadable: {e}"));
    let mut descriptions: Vec<(i64, String)> = serde_json::from_str(&descriptions).map_err(unreadable)?;
    descriptions.sort_unstable_by_key(|d| d.0);
    type ImageRow = (i64, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let mut images: Vec<ImageRow> = serde_json::from_str(&images).map_err(unreadable)?;
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
