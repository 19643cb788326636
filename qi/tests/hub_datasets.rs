//! Datasets by name, exercised offline: with no data folder, WikiText-2 and the C4 sample come
//! from the Hub through hf-hub's cache layout (`$HF_HOME/hub/datasets--ORG--NAME/{refs/main,
//! snapshots/REV/…}`) with HF_HUB_OFFLINE=1, as a user's machine would have them after a download.
//! (Its own test binary, because it sets process-wide environment variables.)
mod common;
use common::temp_dir;
use qi::polars::prelude::*;
use std::io::Write;

fn snapshot(home: &std::path::Path, id: &str) -> std::path::PathBuf {
    let repo = home.join(format!("hub/datasets--{}", id.replace('/', "--")));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "fedcba9876543210").unwrap();
    repo.join("snapshots/fedcba9876543210")
}

#[test]
fn datasets_come_from_the_hub_cache_when_there_is_no_local_copy() {
    let home = temp_dir("hf-home-datasets");
    // WikiText-2 as the dataset stores it: rows with their newlines, "" for blank lines
    let rows = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English film actor . \n", ""];
    let (id, file) = qi::data::WIKITEXT2_HUB;
    let p = snapshot(&home, id).join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let df = DataFrame::new_infer_height(vec![Column::new("text".into(), rows.to_vec())]).unwrap();
    qi::analysis::tidy::write_parquet(&df, &p).unwrap();
    // C4 as the Hub stores it: gzipped JSON lines; more documents than the sample takes
    let (id, file) = qi::data::C4_HUB;
    let p = snapshot(&home, id).join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::default());
    for i in 0..qi::data::C4_HUB_DOCUMENTS + 5 {
        writeln!(gz, "{}", serde_json::json!({"text": format!("document {i}"), "url": "u", "timestamp": "t"})).unwrap();
    }
    gz.finish().unwrap();
    // SAFETY: this test binary has a single test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("QI_SHARED", home.join("no-shared-folder"));
    }
    assert_eq!(qi::data::wikitext2_test(None).unwrap(), rows.join("\n\n"));
    let docs = qi::data::c4_documents(None).unwrap();
    assert_eq!(docs.len(), qi::data::C4_HUB_DOCUMENTS);
    assert_eq!((docs[0].as_str(), docs[1999].as_str()), ("document 0", "document 1999"));
    // not in the cache: an error naming the dataset, the file and offline mode
    std::fs::remove_dir_all(home.join("hub/datasets--allenai--c4")).unwrap();
    let e = format!("{:#}", qi::data::c4_documents(None).unwrap_err());
    assert!(e.contains("allenai/c4") && e.contains(qi::data::C4_HUB.1) && e.contains("HF_HUB_OFFLINE") && e.contains("QI_SHARED"), "{e}");
    // a copy in the user's data folder (QI_DATA) wins over the shared folder's and the Hub's
    let mine = home.join("my-data");
    let shared = home.join("shared-data");
    for (dir, text) in [(&mine, " = Mine = \n"), (&shared, " = Shared = \n")] {
        let f = dir.join(qi::shared::WIKITEXT2_TEST);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, text).unwrap();
    }
    // SAFETY: as above.
    unsafe {
        std::env::set_var("QI_SHARED", &shared);
    }
    assert_eq!(qi::data::wikitext2_test(None).unwrap(), " = Shared = \n");
    unsafe {
        std::env::set_var("QI_DATA", &mine);
    }
    assert_eq!(qi::data::wikitext2_test(None).unwrap(), " = Mine = \n");
    // a local copy still wins, by path
    let raw = home.join("wiki.test.raw");
    std::fs::write(&raw, " \n = A = \n").unwrap();
    assert_eq!(qi::data::wikitext2_test(Some(&raw)).unwrap(), "\n\n = A = \n");
}
