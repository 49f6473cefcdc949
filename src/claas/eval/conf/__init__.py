"""The eval's Hydra configs, shipped in the package (``pkg://claas.eval.conf``)."""
