//! Calibration, SAE training and evaluation text never overlap (on the real C4 sample and
//! WikiText-2 from the shared folder; skipped with a message when it is absent).
mod common;
use qi::data::{documents_in, Split};
use std::collections::HashSet;

#[test]
fn c4_splits_share_no_document_and_cover_all() {
    let Some(path) = qi::shared::shared_path(qi::shared::C4_VALIDATION) else { return };
    let docs = qi::data::c4_documents(Some(&path)).unwrap();
    let sets: Vec<HashSet<String>> = Split::ALL.iter().map(|&s| documents_in(&docs, s).into_iter().collect()).collect();
    for i in 0..3 {
        for j in i + 1..3 {
            let shared = sets[i].intersection(&sets[j]).count();
            assert_eq!(shared, 0, "{:?} and {:?} share {shared} documents", Split::ALL[i], Split::ALL[j]);
        }
    }
    let distinct: HashSet<&String> = docs.iter().collect();
    assert_eq!(sets.iter().map(HashSet::len).sum::<usize>(), distinct.len());
    // every split is large enough for its use (calibration 128 x 512 tokens needs hundreds of documents)
    for (s, set) in Split::ALL.iter().zip(&sets) {
        assert!(set.len() >= 300, "{s:?} has only {} documents", set.len());
    }
}

#[test]
fn calibration_training_and_evaluation_windows_come_from_their_splits() {
    let Some(gguf) = qi::shared::shared_path(qi::shared::SMOLLM2_GGUF) else { return };
    let Some(c4) = qi::shared::shared_path(qi::shared::C4_VALIDATION) else { return };
    let model = qi::load_model(gguf.to_str().unwrap()).unwrap();
    let tok = model.tokenizer().unwrap();
    let docs = qi::data::c4_documents(Some(&c4)).unwrap();
    // each split's documents as token strings, to find where a window came from
    let tokens_of = |s: Split| -> Vec<Vec<u32>> { documents_in(&docs, s).iter().map(|d| tok.encode(d, false).unwrap()).collect() };
    let contains = |hay: &[u32], w: &[u32]| hay.windows(w.len()).any(|x| x == w);
    let calib = qi::data::calibration_windows(&model, qi::data::Corpus::C4, 4, 64, 0).unwrap();
    let train = qi::analysis::training_windows(&model, "c4", 4, 64, 0).unwrap();
    let eval = qi::analysis::text_windows(&model, "c4", 4, 64, 0).unwrap();
    for (name, windows, split) in [("calibration", &calib, Split::Calibration), ("training", &train, Split::SaeTrain), ("evaluation", &eval, Split::Eval)] {
        let own = tokens_of(split);
        for w in windows.iter() {
            assert!(own.iter().any(|d| contains(d, w)), "a {name} window is not from the {split:?} documents");
        }
    }
    // the same seed used to pick the same documents for all three; now no window repeats
    for w in &eval {
        assert!(!calib.contains(w) && !train.contains(w));
    }
    // WikiText-2: evaluation reads the first half; calibration windows lie in the third quarter
    let all = tok.encode(&qi::data::wikitext2_test(None).unwrap(), false).unwrap();
    let eval_ids = qi::data::wikitext2_eval_ids(&model).unwrap();
    assert_eq!(eval_ids.len(), all.len() / 2);
    let wc = qi::data::calibration_windows(&model, qi::data::Corpus::Wikitext2, 8, 32, 5).unwrap();
    let quarter = &all[Split::Calibration.wikitext2_range(all.len())];
    for w in &wc {
        assert!(contains(quarter, w), "a WikiText-2 calibration window is outside the calibration quarter");
    }
}
