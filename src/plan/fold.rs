//! TEMPORARY stand-in until the real fold module lands.
pub fn fold_names<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    names.iter().map(|s| s.as_ref().to_owned()).collect()
}
pub fn join_limited(items: &[String], _limit: usize) -> String {
    items.join(", ")
}
