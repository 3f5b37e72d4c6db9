"""The machinery every analysis shares: checkpoints, the working model, layer groups, the
workspace, the engine (the one evaluation loop), the analysis shape and its journal."""
