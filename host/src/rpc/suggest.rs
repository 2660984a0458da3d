//! "Did you mean …": the known name closest to a mistyped one, for the details of a 1001
//! reply. Pure. Only on the error path, so it may look at every name.

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo
/// (at most a third of the name's length, and at least one edit) and not `name` itself.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// `name`'s versions, newest first, each once: what a constraint that matched none could ask for.
pub fn versions_listed<'a>(versions: impl IntoIterator<Item = &'a semver::Version>) -> String {
    let mut all: Vec<&semver::Version> = versions.into_iter().collect();
    all.sort_by(|a, b| b.cmp(a));
    all.dedup();
    all.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_name_and_strangers_none() {
        let names = ["add", "greet", "word_count", "echo"];
        assert_eq!(closest("ad", names), Some("add"));
        assert_eq!(closest("word_cuont", names), Some("word_count"));
        assert_eq!(
            closest("greet", names),
            None,
            "the name itself is no suggestion"
        );
        assert_eq!(closest("nope", names), None);
        assert_eq!(closest("", names), None);
    }

    #[test]
    fn versions_are_listed_newest_first_once() {
        let v =
            |s: &str| semver::Version::parse(s).unwrap_or_else(|_| semver::Version::new(0, 0, 0));
        let all = [v("1.0.0"), v("2.1.0"), v("1.0.0"), v("0.9.0")];
        assert_eq!(versions_listed(&all), "2.1.0, 1.0.0, 0.9.0");
    }
}
