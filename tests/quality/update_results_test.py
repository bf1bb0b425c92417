#!/usr/bin/env python3
"""scripts/update-results on made-up pages: a table between markers is replaced by what its
generator builds from docs/results/, a hand-edited table is reported by name, text outside the
markers is kept, and an unknown table name is an error. Standard library only."""
import importlib.machinery
import importlib.util
import os
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
loader = importlib.machinery.SourceFileLoader(
    "update_results", os.path.join(ROOT, "scripts", "update-results"))
spec = importlib.util.spec_from_loader(loader.name, loader)
update_results = importlib.util.module_from_spec(spec)
loader.exec_module(update_results)


def page(body):
    return f"before\n<!-- results:fake -->\n{body}<!-- /results:fake -->\nafter\n"


class Rewrite(unittest.TestCase):
    def setUp(self):
        self.saved = dict(update_results.GENERATORS)
        update_results.GENERATORS["fake"] = lambda: "| a | b |\n| 1 | 2 |"

    def tearDown(self):
        update_results.GENERATORS.clear()
        update_results.GENERATORS.update(self.saved)

    def test_regenerates_between_the_markers_and_keeps_the_rest(self):
        out = update_results.rewrite(page("stale\n"), "x.md")
        self.assertEqual(out, page("| a | b |\n| 1 | 2 |\n"))
        self.assertEqual(update_results.rewrite(out, "x.md"), out)

    def test_a_hand_edited_table_is_named(self):
        fresh = update_results.rewrite(page(""), "x.md")
        edited = fresh.replace("| 1 | 2 |", "| 1 | 3 |")
        self.assertEqual(update_results.stale_tables(edited, update_results.rewrite(edited, "x.md")),
                         ["fake"])
        self.assertEqual(update_results.stale_tables(fresh, update_results.rewrite(fresh, "x.md")),
                         [])

    def test_unknown_table_names_are_errors(self):
        with self.assertRaises(SystemExit) as raised:
            update_results.rewrite("<!-- results:nope -->\n<!-- /results:nope -->\n", "x.md")
        self.assertIn("unknown table 'nope'", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
