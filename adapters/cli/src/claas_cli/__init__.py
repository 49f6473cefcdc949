"""claas-cli: the `claas` command line over claas.Learner."""
