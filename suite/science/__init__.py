"""The mathematics of gradient flow: diagnosis rules, mean-field theory, statistics over seeds.
Pure functions of numbers: no torch, no files, nothing above this layer."""
