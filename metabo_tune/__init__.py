"""metabo_tune: a Ray Tune search for training settings under which a graph neural network recovers the hidden parts
of a metabolic network (rate constants, substrate law, homeostasis, metabolite types) from its time series."""
