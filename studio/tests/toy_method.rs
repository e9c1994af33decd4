//! A labelling method added in one place: this file defines a toy method and registers it, and
//! the database, the importer, the gallery, the exporter and the study set-up take it up with no
//! other change (its own process: the registry is global).

use dissect::model::{LayerInfo, LayerKind};
use studio::gallery::{queries, Audience};
use studio::labels::export;
use studio::methods::{self, ExportLayout, LabellingMethod, Method};
use studio::test_support::{self, import_labels, register_fake_model, FakeModel};
use study::types::{LayerChoice, MethodRef, NewStudy};

struct Toy;

impl LabellingMethod for Toy {
    fn slug(&self) -> &'static str {
        "toy"
    }
    fn title(&self) -> &'static str {
        "Toy method"
    }
    fn export_layout(&self) -> ExportLayout {
        ExportLayout::ClipDissect
    }
}

#[tokio::test]
async fn a_registered_method_is_stored_imported_shown_exported_and_offered_to_studies() {
    let toy = methods::register(&Toy).unwrap();
    assert_eq!(Method::parse("toy"), Some(toy));
    assert_eq!((toy.title(), toy.export_layout()), ("Toy method", ExportLayout::ClipDissect));
    assert_eq!(toy.order(), Method::all().len() - 1, "after the built-in methods");

    let (dir, db) = test_support::temp_db().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT slug FROM label_methods").fetch_all(&db).await.unwrap();
    assert!(stored.iter().any(|s| s == "toy"), "{stored:?}");

    let layer = LayerInfo { name: "fc".into(), kind: LayerKind::Classifier, channels: 3, spatial: None };
    register_fake_model(&db, dir.path(), &FakeModel(vec![layer], vec!["a".into(), "b".into(), "c".into()])).await;
    import_labels(&db, "layer,unit,description\nfc,0,striped fish\nfc,1,cup\n", Some(toy), None).await;
    import_labels(&db, "layer,unit,description\nfc,0,fish\nfc,1,coffee\n", Some(Method::MILAN), None).await;

    // The gallery shows it, after the paper's methods.
    let neuron = queries::neuron(&db, "m", "fc", 0, Audience::Public).await.unwrap().unwrap();
    let shown: Vec<(&str, &str)> = neuron.labels.iter().map(|l| (l.method.title(), l.text.as_str())).collect();
    assert_eq!(shown, [("MILAN", "fish"), ("Toy method", "striped fish")]);

    // The exporter writes it under its own name.
    let file = export::layer_file(&db, "m", "fc", "toy", "", Some("milan")).await.unwrap();
    assert_eq!(file.file_name, "m_fc_toy.csv");
    let csv = String::from_utf8(file.bytes).unwrap();
    assert!(csv.contains("striped fish") && csv.contains("cup") && !csv.contains("coffee"), "{csv}");

    // The study form offers it, and a study comparing it with MILAN is set up.
    let options = study::setup::form_options(&db, Some("m".into())).await.unwrap();
    let offered: Vec<(&str, i64)> = options.layers[0].methods.iter().map(|(m, n)| (m.method.as_str(), *n)).collect();
    assert_eq!(offered, [("milan", 2), ("toy", 2)]);
    for i in 0..12 {
        sqlx::query("INSERT INTO images (sha256, width, height, format, byte_size) VALUES (?, 8, 8, 'png', 1)")
            .bind(format!("{i:064x}"))
            .execute(&db)
            .await
            .unwrap();
    }
    let methods = ["toy", "milan"].map(|m| MethodRef { method: m.into(), source: String::new() }).to_vec();
    let layers = vec![LayerChoice { layer: "fc".into(), units: "0-1".into() }];
    let new = NewStudy::with_defaults("toy vs milan", "m", layers, methods);
    let images = study::fixture::FixedImages { db: db.clone() };
    let id = study::setup::create_study(&db, &images, &new).await.unwrap();
    let summary = study::setup::study_summary(&db, id).await.unwrap().unwrap();
    assert_eq!(summary.name, "toy vs milan");
}
