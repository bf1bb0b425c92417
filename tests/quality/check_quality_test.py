#!/usr/bin/env python3
"""The quality check's comparison (check_quality.compare) on made-up figures: each band is the
formula docs/evaluation.md derives, evaluated here independently, and every way to fail fails.
Standard library only."""
import copy
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_quality  # noqa: E402

MACHINE = {"cpu": "Test CPU", "cpu_model": "family 6 model 207 stepping 2",
           "cpu_flags": "avx2 fma", "logical_cpus": 2, "threads": 2}


def results(**rows):
    return {"date": "2026-01-01", "command": "tessera demo", "machine": dict(MACHINE),
            "samples": 1000, "seed": 0,
            "models": [dict({"model": name, "samples": 1000, "seed": 0, "accuracy": 0.87,
                             "fid_fm": 20.0, "fid_fm_standard_error": 0.3,
                             "samples_digest": "0badf00d"}, **row)
                       for name, row in rows.items()]}


class Bands(unittest.TestCase):
    def test_accuracy_band_is_z_times_the_binomial_difference_error(self):
        # Two independent proportions from n = 1000 at p = 0.87: var = 2 p (1 - p) / n.
        expected = 3.5 * math.sqrt(2 * 0.87 * 0.13 / 1000)
        self.assertAlmostEqual(check_quality.accuracy_band(0.87, 1000), expected, places=12)
        self.assertAlmostEqual(expected, 0.052637, places=5)

    def test_fid_band_adds_both_standard_errors_in_quadrature(self):
        self.assertAlmostEqual(check_quality.fid_band(0.3, 0.4), 3.5 * 0.5, places=12)


class Compare(unittest.TestCase):
    def test_identical_results_pass(self):
        rec = results(a={}, b={"accuracy": None})
        failures, _ = check_quality.compare(rec, copy.deepcopy(rec))
        self.assertEqual(failures, [])

    def test_changed_samples_fail_on_the_recording_cpu_only(self):
        rec = results(a={})
        now = results(a={"samples_digest": "12345678"})
        failures, _ = check_quality.compare(rec, now)
        self.assertEqual(len(failures), 1)
        self.assertIn("samples changed", failures[0])
        other_cpu = copy.deepcopy(now)
        other_cpu["machine"]["cpu_flags"] = "avx2 fma avx512f"
        failures, lines = check_quality.compare(rec, other_cpu)
        self.assertEqual(failures, [])
        self.assertIn("not compared bit for bit", lines[-1])
        other_model = copy.deepcopy(now)
        other_model["machine"]["cpu_model"] = "family 6 model 143 stepping 8"
        self.assertEqual(check_quality.compare(rec, other_model)[0], [])

    def test_accuracy_just_inside_passes_just_outside_fails(self):
        band = check_quality.accuracy_band(0.87, 1000)
        rec = results(a={})
        inside = results(a={"accuracy": 0.87 - 0.99 * band})
        outside = results(a={"accuracy": 0.87 - 1.01 * band})
        self.assertEqual(check_quality.compare(rec, inside, compare_digests=False)[0], [])
        failures = check_quality.compare(rec, outside, compare_digests=False)[0]
        self.assertEqual(len(failures), 1)
        self.assertIn("accuracy", failures[0])

    def test_fid_just_inside_passes_just_outside_fails(self):
        band = check_quality.fid_band(0.3, 0.3)
        rec = results(a={})
        self.assertEqual(check_quality.compare(
            rec, results(a={"fid_fm": 20.0 + 0.99 * band}), compare_digests=False)[0], [])
        failures = check_quality.compare(rec, results(a={"fid_fm": 20.0 + 1.01 * band}),
                                         compare_digests=False)[0]
        self.assertEqual(len(failures), 1)
        self.assertIn("FID-FM", failures[0])

    def test_missing_and_new_models_fail_by_name(self):
        failures, _ = check_quality.compare(results(a={}, b={}), results(a={}, c={}))
        self.assertEqual(len(failures), 2)
        self.assertTrue(any(f.startswith("b:") and "recorded but not shipped" in f
                            for f in failures))
        self.assertTrue(any(f.startswith("c:") and "no recorded figures" in f for f in failures))

    def test_other_sample_count_fails(self):
        failures, _ = check_quality.compare(results(a={}), results(a={"samples": 500}))
        self.assertEqual(len(failures), 1)
        self.assertIn("500 samples", failures[0])


if __name__ == "__main__":
    unittest.main()
