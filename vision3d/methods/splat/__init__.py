"""The CPU-capable splatfacto that det-gs and romap build on."""
