//! Scale: latencies on a database of 1,000,000 keys over 10,000 enterprises against the
//! same operations on 1,000 keys. Both are bulk-loaded here, not through HTTP.
pub fn run(
    _settings: &crate::http::Settings,
    _enterprises: usize,
    _per: usize,
    report: &mut crate::report::Report,
) -> Result<(), String> {
    report.note("scale run: not measured yet".into());
    Ok(())
}
