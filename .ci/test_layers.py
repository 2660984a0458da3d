#!/usr/bin/env python3
"""Tests of the layer guard (.ci/layers.py): it must fail on a cycle and on an upward import,
and must not be fooled by comments, strings, groups, `super`, or re-exports."""

import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import layers  # noqa: E402

LAYERS = """
[[layer]]
name = "vocabulary"
modules = ["crate", "clock", "wire"]
[[layer]]
name = "engines"
modules = ["engine"]
[[layer]]
name = "node"
modules = ["node"]
"""


class Guard(unittest.TestCase):
    def crate(self, files: dict) -> tuple[Path, Path]:
        root = Path(tempfile.mkdtemp())
        src = root / "src"
        for rel, text in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "layers.toml").write_text(LAYERS)
        return src, root / "layers.toml"

    def problems(self, files: dict) -> list[str]:
        return layers.check(*self.crate(files))

    def base(self) -> dict:
        return {
            "lib.rs": "pub mod clock;\npub mod wire;\npub mod engine;\npub mod node;\n",
            "clock.rs": "pub fn now() -> u64 { 0 }\n",
            "wire.rs": "use crate::clock::now;\npub struct Frame;\n",
            "engine/mod.rs": "mod store;\npub use store::Store;\nuse crate::{clock, wire::Frame};\n",
            "engine/store.rs": "use super::super::clock::now;\npub struct Store;\n",
            "node.rs": "use crate::engine::Store;\nfn f() { crate::wire::Frame; }\n",
        }

    def test_a_clean_tree_passes(self):
        self.assertEqual(self.problems(self.base()), [])

    def test_a_deliberate_cycle_fails(self):
        files = self.base()
        files["clock.rs"] += "fn g() -> crate::wire::Frame { todo!() }\n"
        found = self.problems(files)
        self.assertTrue(any("import cycle" in p and "clock" in p and "wire" in p for p in found), found)

    def test_a_cycle_through_a_group_and_super_fails(self):
        files = self.base()
        files["engine/store.rs"] += "use super::{Helper};\n"
        files["engine/mod.rs"] += "pub struct Helper;\nfn h() { store::Store; }\n"
        found = self.problems(files)
        self.assertTrue(any("import cycle" in p and "engine::store" in p for p in found), found)

    def test_an_upward_import_fails(self):
        files = self.base()
        files["wire.rs"] += "use crate::engine::Store;\n"
        found = self.problems(files)
        self.assertTrue(any("a higher layer" in p and "wire (vocabulary)" in p for p in found), found)

    def test_a_reexport_leads_to_the_defining_module(self):
        files = self.base()
        # `engine::Store` is `engine::store::Store`: store may import engine's siblings only
        # through it, and node importing `engine::Store` is an edge to engine::store.
        crate = layers.Crate(self.crate(files)[0])
        self.assertIn(("engine", "store"), crate.edges()[("node",)])

    def test_comments_strings_and_tests_do_not_count(self):
        files = self.base()
        files["clock.rs"] += (
            "// use crate::engine::Store;\n/* crate::node::x */\n"
            'const S: &str = "crate::engine::Store";\n'
            "#[cfg(test)]\nmod tests {\n    use super::*;\n}\n"
        )
        self.assertEqual(self.problems(files), [])

    def test_an_unlisted_module_fails(self):
        files = self.base()
        files["lib.rs"] += "pub mod stray;\n"
        files["stray.rs"] = "use crate::clock::now;\n"
        found = self.problems(files)
        self.assertTrue(any("stray" in p and "has no layer" in p for p in found), found)

    def test_the_real_crate_passes(self):
        root = Path(__file__).resolve().parent.parent
        self.assertEqual(layers.check(root / "host" / "src", root / "host" / "layers.toml"), [])


if __name__ == "__main__":
    unittest.main()
