"""claas-server: the FastAPI adapter over claas.Learner."""
