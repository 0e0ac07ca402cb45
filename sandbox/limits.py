"""Resource limits applied to every container and every program, with the reasons for each default."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    """Limits for one sandbox. Container-level limits bound a whole container; program-level ones bound each run."""

    # --- per program -------------------------------------------------------------------------------------------
    timeout_s: float = 10.0  # wall clock per program; HumanEval/MBPP references finish in well under 1 s
    cpu_s: int = 10  # RLIMIT_CPU per process: stops busy loops even when the wall clock is not reached
    # RLIMIT_DATA per process: a MemoryError instead of an OOM kill where possible. Not RLIMIT_AS, which counts
    # reserved address space: glibc's per-thread malloc arenas reserve 64 MB each, so 20 threads hit 1 GB of it.
    program_memory_mb: int = 1024
    keep_output_bytes: int = 8 * 1024  # how much of stdout/stderr is kept in the Result; the rest is counted, read
    # and dropped: output never fails a program (tests judge return values), and the time limits bound its cost
    file_size_mb: int = 64  # RLIMIT_FSIZE: one file cannot fill the scratch space
    open_files: int = 256  # RLIMIT_NOFILE
    # --- per container -----------------------------------------------------------------------------------------
    memory_mb: int = 2048  # docker --memory, with --memory-swap equal (no swap)
    pids: int = 256  # docker --pids-limit: a fork bomb hits this, not the host
    cpus: float = 1.0  # docker --cpus: one busy program cannot starve its neighbours
    scratch_mb: int = 256  # tmpfs mounted at /scratch, the only writable place
    scratch_inodes: int = 4096  # tmpfs nr_inodes: "many files" stops here
    shm_mb: int = 64  # tmpfs at /dev/shm for multiprocessing's semaphores and shared memory, wiped after each program
    programs_per_container: int = 500  # recycle a container after this many programs (fresh state, no slow leaks)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # flat scalars: no asdict deep copy

    @classmethod
    def from_dict(cls, data: dict) -> Limits:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown limit field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def with_timeout(self, timeout_s: float) -> Limits:
        """Same limits with another wall-clock timeout (CPU time follows it so the two agree)."""
        cpu_s = max(1, int(timeout_s + 0.999))
        return Limits(**{**self.to_dict(), "timeout_s": float(timeout_s), "cpu_s": cpu_s})


def calibrated_timeout(reference_s: float, floor_s: float = 1.0, factor: float = 4.0) -> float:
    """EvalPlus-style timeout: max(floor, factor * reference runtime), so correct code survives a loaded machine."""
    if reference_s < 0:
        raise ValueError(f"reference runtime must be >= 0, got {reference_s}")
    return max(floor_s, factor * reference_s)
