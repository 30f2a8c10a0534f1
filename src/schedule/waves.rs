//! TEMPORARY stand-in until the real waves module lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveTarget {
    Count(u32),
    Percent(u8),
}
pub struct WaveHost<'a> {
    pub name: &'a str,
    pub canary: bool,
}
pub fn layout<'a>(hosts: &[WaveHost<'a>], _targets: &[WaveTarget]) -> Vec<Vec<&'a str>> {
    if hosts.is_empty() {
        vec![]
    } else {
        vec![hosts.iter().map(|h| h.name).collect()]
    }
}
