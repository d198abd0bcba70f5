#!/usr/bin/env python3
"""Compares the loss curves of sft results files with a reference run's, step by step.

Usage: compare_losses.py REFERENCE.h5 OTHER.h5...
Prints, per file, the largest relative difference of its loss from the reference's.
"""
import sys

import h5py
import numpy as np


def losses(path):
    with h5py.File(path, "r") as f:
        return np.asarray(f["sft/loss"][...], dtype=np.float64)


def main():
    reference = losses(sys.argv[1])
    print(f"# loss curves vs {sys.argv[1]} ({len(reference)} steps, {reference[0]:.4f} -> {reference[-1]:.4f})")
    for path in sys.argv[2:]:
        other = losses(path)
        n = min(len(other), len(reference))
        worst = np.max(np.abs(other[:n] - reference[:n]) / np.abs(reference[:n]))
        print(f"  {path}: {n} steps, largest relative difference {worst:.2e}, final loss {other[n - 1]:.4f}")


if __name__ == "__main__":
    main()
