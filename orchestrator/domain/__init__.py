"""Pure ServiceCall domain core: states, commands, events, decide/evolve; standard library only."""
