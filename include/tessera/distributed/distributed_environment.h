#pragma once
// Where this process stands in a data-parallel job, read from the variables `torchrun` sets.
//
// torchrun (and `tessera train --nproc N`, and a Slurm script that exports them) starts one
// process per rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its
// environment. Without WORLD_SIZE (or with WORLD_SIZE=1) the process trains alone, exactly as it
// does without this module.

#include <cstdint>
#include <string>

namespace tessera {

struct DistributedEnvironment {
  int64_t rank = 0;        ///< RANK: this process among all, in [0, world_size)
  int64_t world_size = 1;  ///< WORLD_SIZE: processes in the job
  int64_t local_rank = 0;  ///< LOCAL_RANK: this process among those on its machine (picks a GPU)
  std::string master_address = "127.0.0.1";  ///< MASTER_ADDR: the host of rank 0's store
  int64_t master_port = 29500;               ///< MASTER_PORT: the port of rank 0's store

  /// More than one process: gradients must be all-reduced.
  bool distributed() const { return world_size > 1; }

  /// Reads the variables. Throws tessera::Error naming the variable that is malformed or out of
  /// range, or missing while WORLD_SIZE > 1 says a job is running (RANK, MASTER_ADDR, MASTER_PORT
  /// are required then; LOCAL_RANK defaults to RANK).
  static DistributedEnvironment from_variables();
};  ///< This process's rank, the job's size and the rendezvous address.

}  // namespace tessera
