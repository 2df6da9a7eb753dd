"""The research chains: the event (VC) model and the multimodal fusion candidates with their OOS ablations."""
