"""Events: file I/O, windows, an ESIM-style simulator, E-MoFlow and a CMax baseline.

Modules (import what you need; nothing heavy is imported here):

* :mod:`~vision3d.events.stream`  -- the :class:`EventStream` type and :class:`EventFileError`
* :mod:`~vision3d.events.io`      -- read/write text (ECD), tonic numpy, MVSEC/DSEC HDF5, faery formats; DAVIS IMU
* :mod:`~vision3d.events.windows` -- windows by time or by event count; checks of a window's tensors
* :mod:`~vision3d.events.geometry` -- pinhole camera, motion field, differential epipolar residual
* :mod:`~vision3d.events.simulator` -- ESIM-style events from frames; analytic textured-plane scenes with ground truth
* :mod:`~vision3d.events.contrast` -- image of warped events and its contrast (E-MoFlow's and CMax's objective)
* :mod:`~vision3d.events.flow_inr` -- E-MoFlow's flow INR, event warps, dense flow
* :mod:`~vision3d.events.velocity_spline` -- E-MoFlow's cubic B-spline of the camera's velocities
* :mod:`~vision3d.events.dec`     -- differential epipolar loss and the search over motion directions
* :mod:`~vision3d.events.emoflow` -- E-MoFlow: configs and the per-window fit
* :mod:`~vision3d.events.cmax`    -- patch-wise / global contrast maximization baseline
* :mod:`~vision3d.events.metrics` -- flow EPE / %>3px / AE, ω RMS, v direction error
* :mod:`~vision3d.events.plots`, :mod:`~vision3d.events.cli` -- pictures and the ``v3d flow`` command
"""
