"""EMERALD-O: two cooperating agents (augmentation; optimizer and learning rate) on RLlib
learners, as a Tune searcher (`EmeraldSearch`, entry `emerald`) and as an in-trial
controller (`EmeraldController`, entry `emerald-dynamic`); their warm start (`_warm`)."""
