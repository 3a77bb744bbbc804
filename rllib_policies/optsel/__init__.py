"""Pham 2024's per-epoch optimizer selection: a DQN or PPO agent picks each epoch's
optimizer inside a running trial (entries `optsel-dqn`, `optsel-ppo`)."""
