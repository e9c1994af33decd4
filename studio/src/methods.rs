//! The labelling methods DnD Studio compares, each defined once ([`LabellingMethod`]): its name in
//! URLs, files and the database, its title on pages, the CSV layout its labels export in, and
//! where it stands in the comparison's order. The database keeps no list of its own:
//! `label_methods` (migration 0009) is filled from [`Method::all`] whenever a database is opened
//! ([`crate::db::open`]), and every `method` column references it, so a method defined here (or
//! registered with [`register`]) is stored, imported, exported, shown in the gallery and offered
//! to studies without a migration (`studio/tests/toy_method.rs` adds one).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::RwLock;

/// What defines a labelling method. A new one is a type implementing this, listed in
/// [`BUILT_IN`] (compiled into the server and the browser bundle alike) or, for a server-side
/// method such as a test's toy, passed to [`register`] before the database is opened.
pub trait LabellingMethod: Send + Sync {
    /// Its name in URLs, label files and the database: lower-case letters, digits and `-`.
    fn slug(&self) -> &'static str;
    /// The name pages show.
    fn title(&self) -> &'static str;
    /// The layout its labels are exported in unless another is asked for: by default one
    /// description per row, as MILAN publishes them.
    fn export_layout(&self) -> ExportLayout {
        ExportLayout::Milan
    }
}

/// A method defined by its three fields (the ones the paper compares, and `other`).
struct Defined {
    slug: &'static str,
    title: &'static str,
    layout: ExportLayout,
}

impl LabellingMethod for Defined {
    fn slug(&self) -> &'static str {
        self.slug
    }
    fn title(&self) -> &'static str {
        self.title
    }
    fn export_layout(&self) -> ExportLayout {
        self.layout
    }
}

/// The methods every build knows, in the comparison's order: DnD first, then the others as in
/// the paper's tables, then `other`. DnD is computed here; CLIP-Dissect here when CLIP is
/// configured, else imported; the rest are imported.
static BUILT_IN: [Defined; 6] = [
    Defined { slug: "dnd", title: "DnD", layout: ExportLayout::DndTop3 },
    Defined { slug: "clip-dissect", title: "CLIP-Dissect", layout: ExportLayout::ClipDissect },
    Defined { slug: "milan", title: "MILAN", layout: ExportLayout::Milan },
    Defined { slug: "netdissect", title: "Network Dissection", layout: ExportLayout::NetDissectTally },
    Defined { slug: "falcon", title: "FALCON", layout: ExportLayout::Milan },
    Defined { slug: "other", title: "Other", layout: ExportLayout::Milan },
];

/// Methods added at run time by [`register`], after the built-in ones in the comparison's order.
static REGISTERED: RwLock<Vec<&'static dyn LabellingMethod>> = RwLock::new(Vec::new());

/// Adds a method: from now on it is parsed, stored (`label_methods` is filled from [`Method::all`]
/// when a database is opened), imported, exported, shown and offered to studies. Known only to
/// this process: the browser bundle shows a method it does not know as `other` until it is
/// added to [`BUILT_IN`].
pub fn register(method: &'static dyn LabellingMethod) -> Result<Method, String> {
    let slug = method.slug();
    let well_formed = !slug.is_empty()
        && slug.len() <= 40
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(format!("method slug `{}`: expected 1-40 lower-case letters, digits or `-`", slug.escape_debug()));
    }
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    if BUILT_IN.iter().any(|d| d.slug == slug) || registered.iter().any(|m| m.slug() == slug) {
        return Err(format!("method `{slug}` is already defined"));
    }
    registered.push(method);
    Ok(Method(slug))
}

/// Calls `f` with every method in the comparison's order.
fn each<T>(mut f: impl FnMut(&dyn LabellingMethod) -> Option<T>) -> Option<T> {
    if let Some(t) = BUILT_IN.iter().find_map(|d| f(d)) {
        return Some(t);
    }
    REGISTERED.read().unwrap_or_else(|e| e.into_inner()).iter().find_map(|m| f(*m))
}

/// A labelling method, by its slug: what views, rows and requests carry. Serialised as the slug
/// (`"clip-dissect"`), as in URLs and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(&'static str);

/// The CSV layouts a method's labels are exported in by default: the method's own published one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLayout {
    DndTop3,
    ClipDissect,
    NetDissectTally,
    Milan,
}

impl ExportLayout {
    /// The name `/export?format=` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportLayout::DndTop3 => "dnd-top3",
            ExportLayout::ClipDissect => "clip-dissect",
            ExportLayout::NetDissectTally => "netdissect-tally",
            ExportLayout::Milan => "milan",
        }
    }
}

impl Method {
    /// Describe-and-Dissect, computed here.
    pub const DND: Method = Method("dnd");
    pub const CLIP_DISSECT: Method = Method("clip-dissect");
    pub const MILAN: Method = Method("milan");
    pub const NET_DISSECT: Method = Method("netdissect");
    pub const FALCON: Method = Method("falcon");
    /// Any other source of labels (imported), and what a stored slug this build does not know
    /// is shown as.
    pub const OTHER: Method = Method("other");

    /// Every method, in the comparison's order (built-in, then registered).
    pub fn all() -> Vec<Method> {
        let mut all: Vec<Method> = BUILT_IN.iter().map(|d| Method(d.slug)).collect();
        all.extend(REGISTERED.read().unwrap_or_else(|e| e.into_inner()).iter().map(|m| Method(m.slug())));
        all
    }

    /// The name in URLs, label files and the database.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The defined method named `s`, if any.
    pub fn parse(s: &str) -> Option<Method> {
        each(|m| (m.slug() == s).then(|| Method(m.slug())))
    }

    /// The name pages show.
    pub fn title(self) -> &'static str {
        each(|m| (m.slug() == self.0).then(|| m.title())).unwrap_or(self.0)
    }

    /// The layout its labels are exported in unless another is asked for.
    pub fn export_layout(self) -> ExportLayout {
        each(|m| (m.slug() == self.0).then(|| m.export_layout())).unwrap_or(ExportLayout::Milan)
    }

    /// Position in the comparison (tables, the layer grid's cards, export links).
    pub fn order(self) -> usize {
        // Called inside sorts: no list is built.
        if let Some(i) = BUILT_IN.iter().position(|d| d.slug == self.0) {
            return i;
        }
        let registered = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
        registered.iter().position(|m| m.slug() == self.0).map_or(usize::MAX, |i| BUILT_IN.len() + i)
    }

    /// A slug from storage, where the database guarantees a defined method (every `method`
    /// column references `label_methods`); an unknown one (a database written by a newer
    /// version) is shown as [`Method::OTHER`] rather than failing the page.
    pub fn from_stored(s: &str) -> Method {
        Method::parse(s).unwrap_or(Method::OTHER)
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// A slug this process does not know is refused: requests name defined methods only (and
/// views, which the server writes, carry only those).
impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let slug = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Method::parse(&slug)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown labelling method `{}`", slug.escape_debug())))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip_through_parse_and_serde() {
        for m in Method::all() {
            assert_eq!(Method::parse(m.as_str()), Some(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()), "serde and the slug agree");
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        assert_eq!(Method::parse("DnD"), None);
        assert_eq!(Method::from_stored("next-paper"), Method::OTHER);
        assert!(serde_json::from_str::<Method>("\"next-paper\"").is_err(), "requests name defined methods");
        let orders: Vec<usize> = Method::all().iter().map(|m| m.order()).collect();
        assert_eq!(orders, (0..Method::all().len()).collect::<Vec<_>>());
        assert_eq!(
            (Method::NET_DISSECT.title(), Method::DND.export_layout()),
            ("Network Dissection", ExportLayout::DndTop3)
        );
        assert!(register(&Defined { slug: "Bad Slug", title: "x", layout: ExportLayout::Milan }).is_err());
        assert!(register(&BUILT_IN[0]).is_err(), "a slug is defined once");
    }
}
