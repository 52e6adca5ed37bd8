"""Federated learning: a Flower app (ServerApp + ClientApp) and the local federation that runs it."""
