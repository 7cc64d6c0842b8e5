//! Which types are active and which source defines each: the bundle's and the label packs'
//! type names, the user's `--types` and `--override`, resolved into label groups by name only
//! (no model is loaded here).

use crate::{Error, Result};

/// The type names one source (the bundle or a label pack) offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSource {
    /// How messages name the source, e.g. `bundle model.nerb` or `label pack drugs.nerp`.
    pub label: String,
    /// Every type name the source defines, in its own order.
    pub names: Vec<String>,
}

/// The active types of each source: `result[0]` for `bundle`, `result[1 + i]` for `packs[i]`,
/// each in label order. A source may end up with no types.
///
/// Active types: with `types`, exactly those names (first occurrence of a repeated name), each
/// looked up in the bundle and every pack; the bundle's group lists them in `types` order, a
/// pack's group too. Without `types`, the bundle's `default_active` (in that order) and every
/// type of every pack (in pack order).
///
/// A name active in two sources is an [`Error::Usage`] unless `allow_override`: then the later
/// source (packs in the order given, after the bundle) defines it and the earlier ones drop it.
/// A name in `types` that no source has is an [`Error::Usage`] listing every known name.
pub fn resolve_groups(
    bundle: &TypeSource,
    default_active: &[String],
    packs: &[TypeSource],
    types: Option<&[String]>,
    allow_override: bool,
) -> Result<Vec<Vec<String>>> {
    let mut wanted: Vec<&String> = Vec::new();
    for name in types.unwrap_or(default_active) {
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    let in_source = |source: &TypeSource, name: &str| source.names.iter().any(|n| n == name);
    let mut groups: Vec<Vec<String>> = Vec::with_capacity(1 + packs.len());
    groups.push(
        wanted
            .iter()
            .filter(|n| in_source(bundle, n))
            .map(|n| n.to_string())
            .collect(),
    );
    for pack in packs {
        groups.push(match types {
            Some(_) => wanted
                .iter()
                .filter(|n| in_source(pack, n))
                .map(|n| n.to_string())
                .collect(),
            None => pack.names.clone(),
        });
    }
    if types.is_some() {
        for name in &wanted {
            if !groups.iter().any(|g| g.contains(name)) {
                let known: Vec<&str> = std::iter::once(bundle)
                    .chain(packs)
                    .flat_map(|s| s.names.iter().map(String::as_str))
                    .collect();
                return Err(Error::Usage(format!(
                    "unknown entity type {name:?}; the bundle and packs have: {}",
                    known.join(", ")
                )));
            }
        }
    }
    let label = |i: usize| {
        if i == 0 {
            &bundle.label
        } else {
            &packs[i - 1].label
        }
    };
    for later in (1..groups.len()).rev() {
        let (earlier_groups, rest) = groups.split_at_mut(later);
        for (earlier, group) in earlier_groups.iter_mut().enumerate() {
            for name in &rest[0] {
                if let Some(at) = group.iter().position(|n| n == name) {
                    if !allow_override {
                        return Err(Error::Usage(format!(
                            "entity type {name:?} is defined by both {} and {}; drop it from one \
                             of them, or pass --override to let the later one replace the \
                             earlier",
                            label(earlier),
                            label(later)
                        )));
                    }
                    group.remove(at);
                }
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn source(label: &str, names: &[&str]) -> TypeSource {
        TypeSource {
            label: label.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn defaults_explicit_types_conflicts_and_override() {
        let bundle = source("bundle b", &["PER", "LOC", "ORG", "MISC"]);
        let drugs = source("label pack d", &["DRUG", "DOSE"]);
        let orgs = source("label pack o", &["ORG", "TEAM"]);
        let default = names(&["PER", "LOC", "ORG"]);

        let g =
            resolve_groups(&bundle, &default, std::slice::from_ref(&drugs), None, false).unwrap();
        assert_eq!(g, [names(&["PER", "LOC", "ORG"]), names(&["DRUG", "DOSE"])]);

        let types = names(&["DOSE", "MISC", "DOSE", "PER"]);
        let g = resolve_groups(
            &bundle,
            &default,
            std::slice::from_ref(&drugs),
            Some(&types),
            false,
        )
        .unwrap();
        assert_eq!(g, [names(&["MISC", "PER"]), names(&["DOSE"])]);

        let unknown = names(&["PER", "GENE"]);
        let e = resolve_groups(
            &bundle,
            &default,
            std::slice::from_ref(&drugs),
            Some(&unknown),
            false,
        );
        assert!(
            matches!(&e, Err(Error::Usage(m)) if m.contains("\"GENE\"") && m.contains("DOSE")),
            "{e:?}"
        );

        let packs = [drugs.clone(), orgs.clone()];
        let e = resolve_groups(&bundle, &default, &packs, None, false);
        assert!(
            matches!(&e, Err(Error::Usage(m)) if m.contains("\"ORG\"") && m.contains("bundle b")
                && m.contains("label pack o") && m.contains("--override")),
            "{e:?}"
        );
        let g = resolve_groups(&bundle, &default, &packs, None, true).unwrap();
        assert_eq!(
            g,
            [
                names(&["PER", "LOC"]),
                names(&["DRUG", "DOSE"]),
                names(&["ORG", "TEAM"])
            ]
        );
        let g = resolve_groups(&bundle, &default, &[], Some(&[]), false).unwrap();
        assert_eq!(g, [Vec::<String>::new()]);
    }

    fn type_name() -> impl Strategy<Value = String> {
        proptest::sample::select(&["A", "B", "C", "D", "E", "F"][..]).prop_map(str::to_string)
    }

    fn unique(v: Vec<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in v {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    proptest! {
        /// With override, every active name is defined by exactly one source, the last one that
        /// has it; nothing active is lost and nothing inactive appears.
        #[test]
        fn override_gives_each_name_to_its_last_source(
            bundle in proptest::collection::vec(type_name(), 0..5),
            packs in proptest::collection::vec(proptest::collection::vec(type_name(), 1..4), 0..4),
            types in proptest::option::of(proptest::collection::vec(type_name(), 0..6)),
        ) {
            let bundle = TypeSource { label: "bundle".into(), names: unique(bundle) };
            let packs: Vec<TypeSource> = packs
                .into_iter()
                .enumerate()
                .map(|(i, p)| TypeSource { label: format!("pack {i}"), names: unique(p) })
                .collect();
            let default = bundle.names.clone();
            let result = resolve_groups(&bundle, &default, &packs, types.as_deref(), true);
            let sources: Vec<&TypeSource> = std::iter::once(&bundle).chain(&packs).collect();
            let known = |n: &String| sources.iter().any(|s| s.names.contains(n));
            if let Some(t) = &types {
                if let Some(missing) = t.iter().find(|n| !known(n)) {
                    prop_assert!(
                        matches!(&result, Err(Error::Usage(m)) if m.contains(missing.as_str())),
                        "{:?}", result
                    );
                    return Ok(());
                }
            }
            let groups = result.unwrap();
            prop_assert_eq!(groups.len(), sources.len());
            let active: Vec<String> = match &types {
                Some(t) => unique(t.clone()),
                None => unique(sources.iter().flat_map(|s| s.names.clone()).collect()),
            };
            for name in &active {
                let owners: Vec<usize> =
                    (0..groups.len()).filter(|&g| groups[g].contains(name)).collect();
                let last = (0..sources.len()).rev().find(|&s| sources[s].names.contains(name));
                prop_assert_eq!(owners, last.into_iter().collect::<Vec<_>>(), "{}", name);
            }
            for (g, group) in groups.iter().enumerate() {
                prop_assert!(group.iter().all(|n| active.contains(n) && sources[g].names.contains(n)));
                prop_assert_eq!(group.clone(), unique(group.clone()));
            }
        }
    }
}
