//! Which toolchain built a component, read from its top-level `producers` section: it decides
//! the default of `instance_reuse` ([`crate::sandbox::InstanceReuse`]). componentize-py and
//! componentize-js write pre-initialised interpreter images (12–18 MB) that cost far more to
//! instantiate than a call costs; everything else (Rust, C, Go) instantiates in microseconds.

use crate::sandbox::InstanceReuse;

/// The guest's language, as far as the reuse policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Built by componentize-py (its `component-init-transform` step pre-initialises CPython).
    Python,
    /// Built by componentize-js (StarlingMonkey).
    JavaScript,
    /// Anything else.
    Other,
}

impl Language {
    /// What the component's producers say it is (`Other` when they say nothing we know).
    pub fn of(bytes: &[u8]) -> Language {
        let Ok(Some(data)) = super::stamp::top_level_section(bytes, "producers") else {
            return Language::Other;
        };
        let Ok(reader) =
            wasmparser::ProducersSectionReader::new(wasmparser::BinaryReader::new(data, 0))
        else {
            return Language::Other;
        };
        let mut found = Language::Other;
        for field in reader.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                match (field.name, value.name) {
                    ("language", "JavaScript") | ("processed-by", "ComponentizeJS") => {
                        return Language::JavaScript;
                    }
                    ("language", "Python")
                    | ("processed-by", "componentize-py" | "component-init-transform") => {
                        found = Language::Python;
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// The reuse policy of a component whose sandbox sets none.
    pub fn default_reuse(self) -> InstanceReuse {
        match self {
            Language::Python | Language::JavaScript => InstanceReuse::Serial,
            Language::Other => InstanceReuse::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component preamble with a top-level producers section of `fields`.
    fn with_producers(fields: &[(&str, &str)]) -> Vec<u8> {
        use wasm_encoder::Section;
        let mut section = wasm_encoder::ProducersSection::new();
        for (field, value) in fields {
            let mut f = wasm_encoder::ProducersField::new();
            f.value(value, "1.0");
            section.field(field, &f);
        }
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        section.append_to(&mut out);
        out
    }

    #[test]
    fn the_producers_section_names_the_language() {
        let py = with_producers(&[("processed-by", "component-init-transform")]);
        assert_eq!(Language::of(&py), Language::Python);
        let js = with_producers(&[("language", "JavaScript")]);
        assert_eq!(Language::of(&js), Language::JavaScript);
        let rust = with_producers(&[("processed-by", "wit-component")]);
        assert_eq!(Language::of(&rust), Language::Other);
        assert_eq!(Language::of(b"\0asm\x0d\0\x01\0"), Language::Other);
        assert_eq!(Language::of(b"garbage"), Language::Other);
        assert_eq!(Language::Python.default_reuse(), InstanceReuse::Serial);
        assert_eq!(Language::Other.default_reuse(), InstanceReuse::Never);
    }
}
