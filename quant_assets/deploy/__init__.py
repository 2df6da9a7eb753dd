"""Deployment wiring: the executor a deployment asks for, and training steps as Kubernetes pods."""
