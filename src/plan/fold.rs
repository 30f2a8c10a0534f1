//! Folding host names for readable plans (DESIGN 5): a plan for a thousand hosts must stay
//! readable, so runs of numbered names collapse into ranges like `web-[001-120]` and long
//! lists are cut off with "and N more".

/// A name split around its last run of ASCII digits, which is where fleets number hosts
/// (`web-012`, `node-03.eu`).
struct Numbered<'a> {
    name: &'a str,
    prefix: &'a str,
    digits: &'a str,
    suffix: &'a str,
    value: u128,
}

fn split(name: &str) -> Option<Numbered<'_>> {
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[start..end];
    // More digits than fit a u128 are not a host number anyone reads as a range.
    let value = digits.parse().ok()?;
    Some(Numbered {
        name,
        prefix: &name[..start],
        digits,
        suffix: &name[end..],
        value,
    })
}

/// Folds names into display items: e.g. ["web-001","web-002","web-003","db-1"] -> ["db-1",
/// "web-[001-003]"] (output sorted by first name). A run = names with identical prefix and
/// suffix around the LAST run of ASCII digits, with the same digit width, consecutive numbers;
/// 3 or more fold.
///
/// Equal width matters because `web-[9-11]` would read as if `web-09` existed; mixed widths
/// are listed apart. Duplicate names are shown once. Items are ordered by their first name
/// in plain string order (`web-10` before `web-9`), like the rest of the plan.
pub fn fold_names<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    let mut names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.sort_unstable();
    names.dedup();

    let mut plain: Vec<&str> = Vec::new();
    let mut numbered: Vec<Numbered<'_>> = Vec::new();
    for name in names {
        match split(name) {
            Some(n) => numbered.push(n),
            None => plain.push(name),
        }
    }
    numbered.sort_by(|a, b| {
        (a.prefix, a.suffix, a.digits.len(), a.value).cmp(&(b.prefix, b.suffix, b.digits.len(), b.value))
    });

    // (first name, display text)
    let mut items: Vec<(&str, String)> = plain.into_iter().map(|n| (n, n.to_owned())).collect();
    let mut rest = numbered.as_slice();
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .enumerate()
            .take_while(|(i, n)| {
                n.prefix == first.prefix
                    && n.suffix == first.suffix
                    && n.digits.len() == first.digits.len()
                    && u128::try_from(*i).is_ok_and(|i| first.value.checked_add(i) == Some(n.value))
            })
            .count();
        let (run, tail) = rest.split_at(len);
        match run {
            [first, .., last] if run.len() >= 3 => items.push((
                first.name,
                format!(
                    "{}[{}-{}]{}",
                    first.prefix, first.digits, last.digits, first.suffix
                ),
            )),
            _ => items.extend(run.iter().map(|n| (n.name, n.name.to_owned()))),
        }
        rest = tail;
    }
    items.sort_by(|a, b| a.0.cmp(b.0));
    items.into_iter().map(|(_, text)| text).collect()
}

/// "a, b, c" with at most `limit` items, then ", and N more". N counts items, which after
/// [`fold_names`] may be ranges. With a `limit` of 0 only "N more" is left.
pub fn join_limited(items: &[String], limit: usize) -> String {
    if items.len() <= limit {
        return items.join(", ");
    }
    let more = items.len() - limit;
    if limit == 0 {
        return format!("{more} more");
    }
    format!("{}, and {more} more", items[..limit].join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fold(names: &[&str]) -> Vec<String> {
        fold_names(names)
    }

    #[test]
    fn the_documented_example() {
        assert_eq!(
            fold(&["web-001", "web-002", "web-003", "db-1"]),
            vec!["db-1", "web-[001-003]"]
        );
    }

    #[test]
    fn empty_input() {
        assert!(fold(&[]).is_empty());
        assert_eq!(join_limited(&[], 10), "");
    }

    #[test]
    fn zero_padded_runs_fold() {
        let names: Vec<String> = (1..=120).map(|i| format!("web-{i:03}")).collect();
        assert_eq!(fold_names(&names), vec!["web-[001-120]"]);
    }

    #[test]
    fn input_order_does_not_matter() {
        assert_eq!(fold(&["web-03", "web-01", "web-02"]), vec!["web-[01-03]"]);
    }

    #[test]
    fn gaps_break_runs() {
        assert_eq!(
            fold(&[
                "web-01", "web-02", "web-03", "web-05", "web-07", "web-08", "web-09", "web-10"
            ]),
            vec!["web-[01-03]", "web-05", "web-[07-10]"]
        );
    }

    #[test]
    fn differing_widths_do_not_fold_together() {
        assert_eq!(
            fold(&["web-9", "web-10", "web-11"]),
            vec!["web-10", "web-11", "web-9"]
        );
        assert_eq!(
            fold(&["web-8", "web-9", "web-10", "web-11", "web-12"]),
            vec!["web-[10-12]", "web-8", "web-9"]
        );
        assert_eq!(
            fold(&["web-1", "web-02", "web-003"]),
            vec!["web-003", "web-02", "web-1"]
        );
    }

    #[test]
    fn a_run_may_carry_over_a_power_of_ten_at_equal_width() {
        assert_eq!(
            fold(&["web-098", "web-099", "web-100", "web-101"]),
            vec!["web-[098-101]"]
        );
    }

    #[test]
    fn two_element_runs_are_listed() {
        assert_eq!(fold(&["web-01", "web-02"]), vec!["web-01", "web-02"]);
        assert_eq!(
            fold(&["a-1", "a-2", "b-1", "b-2", "b-3"]),
            vec!["a-1", "a-2", "b-[1-3]"]
        );
    }

    #[test]
    fn suffixes_are_kept() {
        assert_eq!(
            fold(&["node-01.eu", "node-02.eu", "node-03.eu"]),
            vec!["node-[01-03].eu"]
        );
        assert_eq!(
            fold(&["node-01.eu", "node-02.us", "node-03.eu"]),
            vec!["node-01.eu", "node-02.us", "node-03.eu"]
        );
    }

    #[test]
    fn only_the_last_digit_run_counts() {
        assert_eq!(
            fold(&["rack1-web01", "rack1-web02", "rack1-web03", "rack2-web04"]),
            vec!["rack1-web[01-03]", "rack2-web04"]
        );
        // Differing earlier numbers are different prefixes.
        assert_eq!(
            fold(&["r1-n1", "r2-n2", "r3-n3"]),
            vec!["r1-n1", "r2-n2", "r3-n3"]
        );
    }

    #[test]
    fn names_without_digits_and_duplicates() {
        assert_eq!(fold(&["beta", "alpha", "alpha"]), vec!["alpha", "beta"]);
        assert_eq!(fold(&["w1", "w2", "w2", "w3"]), vec!["w[1-3]"]);
    }

    #[test]
    fn digits_only_names_fold() {
        assert_eq!(fold(&["10", "11", "12"]), vec!["[10-12]"]);
    }

    #[test]
    fn huge_numbers_do_not_panic() {
        let big = "9".repeat(60);
        let names = [format!("h-{big}"), "h-1".to_owned()];
        assert_eq!(fold_names(&names), vec!["h-1".to_owned(), format!("h-{big}")]);
        let max = u128::MAX.to_string();
        let names = [
            format!("h-{max}"),
            format!("h-{}", u128::MAX - 1),
            format!("h-{}", u128::MAX - 2),
        ];
        assert_eq!(fold_names(&names), vec![format!("h-[{}-{max}]", u128::MAX - 2)]);
    }

    #[test]
    fn items_sorted_by_first_name() {
        assert_eq!(
            fold(&["zeta", "web-2", "web-1", "web-3", "app"]),
            vec!["app", "web-[1-3]", "zeta"]
        );
    }

    #[test]
    fn thousand_names_fold_to_one_item() {
        let names: Vec<String> = (1..=1000).map(|i| format!("prod-eu-web-{i:04}")).collect();
        assert_eq!(fold_names(&names), vec!["prod-eu-web-[0001-1000]"]);
    }

    #[test]
    fn join_limited_cuts_after_limit() {
        let items: Vec<String> = (1..=12).map(|i| format!("h{i}")).collect();
        assert_eq!(join_limited(&items[..3], 10), "h1, h2, h3");
        assert_eq!(
            join_limited(&items[..10], 10),
            "h1, h2, h3, h4, h5, h6, h7, h8, h9, h10"
        );
        assert_eq!(
            join_limited(&items, 10),
            "h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, and 2 more"
        );
        assert_eq!(join_limited(&items, 1), "h1, and 11 more");
        assert_eq!(join_limited(&items, 0), "12 more");
        assert_eq!(join_limited(&items[..1], 0), "1 more");
    }

    /// Expands a display item back into the names it stands for.
    fn expand(item: &str) -> Vec<String> {
        let (Some(open), Some(close)) = (item.find('['), item.find(']')) else {
            return vec![item.to_owned()];
        };
        let (lo, hi) = item[open + 1..close].split_once('-').unwrap();
        let width = lo.len();
        assert_eq!(hi.len(), width);
        let (lo, hi): (u128, u128) = (lo.parse().unwrap(), hi.parse().unwrap());
        assert!(hi >= lo + 2, "runs fold from three names");
        (lo..=hi)
            .map(|v| format!("{}{v:0width$}{}", &item[..open], &item[close + 1..]))
            .collect()
    }

    proptest! {
        #[test]
        fn folding_loses_and_invents_no_name(
            names in prop::collection::vec(("(web|db|node)-", 0u32..40, prop::sample::select(vec![1usize, 2, 3]), "(|\\.eu)"), 0..80)
        ) {
            let names: Vec<String> = names
                .into_iter()
                .map(|(p, n, w, s)| format!("{p}{n:0w$}{s}"))
                .collect();
            let items = fold_names(&names);

            let mut expanded: Vec<String> = items.iter().flat_map(|i| expand(i)).collect();
            expanded.sort();
            let mut want = names.clone();
            want.sort();
            want.dedup();
            prop_assert_eq!(&expanded, &want);

            // Sorted by first name.
            let firsts: Vec<String> = items.iter().map(|i| expand(i).remove(0)).collect();
            let mut sorted = firsts.clone();
            sorted.sort();
            prop_assert_eq!(firsts, sorted);

            // Maximal: no two unfolded neighbours-in-number of the same shape could have been
            // part of a run of three.
            let singles: std::collections::BTreeSet<&str> =
                items.iter().filter(|i| !i.contains('[')).map(String::as_str).collect();
            for s in &singles {
                if let Some(n) = split(s) {
                    let at = |v: u128| format!("{}{v:0w$}{}", n.prefix, n.suffix, w = n.digits.len());
                    let next = n.value + 1;
                    let next2 = n.value + 2;
                    let fits = |v: u128| at(v).len() == s.len();
                    if fits(next2) {
                        let chain = singles.contains(at(next).as_str()) && singles.contains(at(next2).as_str());
                        prop_assert!(!chain, "{} starts an unfolded run", s);
                    }
                }
            }
        }
    }
}
