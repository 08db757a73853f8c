"""Building blocks of the methods (``clplat.strategies.parts``): shared pieces (parameter
snapshots, the diagonal Fisher, the manual optimisation loop) and method-specific machinery
(SHARP's memories and unit connectivity, the hypernetworks). None of them is a method: the
methods are the modules of ``clplat.strategies``, one per ``conf/strategy`` or ``conf/plugin`` config."""
