"""Code only the tests and benches use (gold-set scoring of extraction, a multi-node Ray on one
machine, injected duplicates): not part of the shipped `refine` and `pretrain` packages. Bench
scripts put the repository root on ``sys.path`` to import it."""
