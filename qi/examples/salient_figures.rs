fn main() {
    let p = std::env::args().nth(1).unwrap();
    let df = qi::analysis::tidy::read_parquet(std::path::Path::new(&p)).unwrap();
    qi::save_figure(&qi::analysis::salient::count_figure(&df).unwrap(), "08_salient_counts").unwrap();
    qi::save_figure(&qi::analysis::salient::overlap_figure(&df).unwrap(), "08_salient_overlap").unwrap();
}
