"""HelixSurf: a NeuS SDF and PatchMatch MVS regularising each other, with an occupancy grid (``ns-train helixsurf``)."""
