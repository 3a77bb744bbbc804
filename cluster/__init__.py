"""Deployment: Ray cluster launcher and KubeRay configs, and a local multi-node cluster."""
