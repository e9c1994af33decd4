//! The labelling methods DnD Studio compares, each defined once, here: its name in URLs, files and
//! the database, its title on pages, the CSV layout its labels export in, and where it stands in
//! the comparison's order. The database keeps no list of its own: `label_methods` (migration
//! 0009) is filled from [`Method::ALL`] at every start ([`crate::db::open`]), and every `method`
//! column references it, so a method added here is stored, imported, exported, shown in the
//! gallery and offered to studies without a migration.

use serde::{Deserialize, Serialize};

/// A labelling method. Serialised as its slug (`"clip-dissect"`), as in URLs and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Describe-and-Dissect, computed here.
    Dnd,
    /// CLIP-Dissect: computed here when CLIP is configured, else imported.
    #[serde(rename = "clip-dissect")]
    ClipDissect,
    Milan,
    #[serde(rename = "netdissect")]
    NetDissect,
    Falcon,
    /// Any other source of labels (imported).
    Other,
}

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
    /// Every method, in the comparison's order: DnD first, then the others as in the paper's tables.
    pub const ALL: [Method; 6] =
        [Method::Dnd, Method::ClipDissect, Method::Milan, Method::NetDissect, Method::Falcon, Method::Other];

    /// The name in URLs, label files and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Dnd => "dnd",
            Method::ClipDissect => "clip-dissect",
            Method::Milan => "milan",
            Method::NetDissect => "netdissect",
            Method::Falcon => "falcon",
            Method::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The name pages show.
    pub fn title(self) -> &'static str {
        match self {
            Method::Dnd => "DnD",
            Method::ClipDissect => "CLIP-Dissect",
            Method::Milan => "MILAN",
            Method::NetDissect => "Network Dissection",
            Method::Falcon => "FALCON",
            Method::Other => "Other",
        }
    }

    /// The layout its labels are exported in unless another is asked for.
    pub fn export_layout(self) -> ExportLayout {
        match self {
            Method::Dnd => ExportLayout::DndTop3,
            Method::ClipDissect => ExportLayout::ClipDissect,
            Method::NetDissect => ExportLayout::NetDissectTally,
            Method::Milan | Method::Falcon | Method::Other => ExportLayout::Milan,
        }
    }

    /// Position in the comparison (tables, the layer grid's cards, export links).
    pub fn order(self) -> usize {
        Method::ALL.iter().position(|m| *m == self).expect("every method is in ALL")
    }

    /// A slug from storage, where the database guarantees a known method (every `method` column
    /// references `label_methods`, filled from [`Method::ALL`]); an unknown one (a database
    /// written by a newer version) is shown as [`Method::Other`] rather than failing the page.
    pub fn from_stored(s: &str) -> Method {
        Method::parse(s).unwrap_or(Method::Other)
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
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()), "serde and the slug agree");
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        assert_eq!(Method::parse("DnD"), None);
        assert_eq!(Method::from_stored("next-paper"), Method::Other);
        let orders: Vec<usize> = Method::ALL.iter().map(|m| m.order()).collect();
        assert_eq!(orders, (0..Method::ALL.len()).collect::<Vec<_>>());
    }
}
