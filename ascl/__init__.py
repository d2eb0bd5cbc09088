"""The `ascl` command line and the evaluation harness, the one layer that imports every part."""
