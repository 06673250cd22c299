"""Vendor kernels behind the exact kinds' `implementation=` (cuDNN, Pallas TPU/GPU, tokamax),
the rules that choose among them (`rules`), running and explaining the choice (`dispatch`), and
the platform they run on (`platform`)."""
