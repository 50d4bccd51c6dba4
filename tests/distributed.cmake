# Training on several MPI ranks (xtnn/distributed.hpp), whole jobs started with mpirun:
#  - every rank ends with the same weights, optimizer state, random state and History (bitwise),
#    with BatchNormalization's moving statistics too;
#  - 2 ranks of 1 thread equal one process of 2 threads bit for bit (the same cut of every batch,
#    the same order of sums) with xtnn's ring and with MPI_Allreduce, and 3 ranks in fixed_order
#    equal one process of 3 threads; 3 ranks on the ring agree with each other, across runs, and
#    through shared memory or over messages;
#  - one process of 1 thread (the batch's gradient in one piece) agrees within the tolerance of
#    README "Training on several machines";
#  - a checkpoint of a 2-rank run resumes on 1 process and one of a 1-process run on 2 ranks,
#    both equal to the straight run;
#  - evaluate with the ranks gives every rank one process's figures;
#  - a rank that throws or is killed ends the job with a message naming it, well inside the
#    timeout, and the last checkpoint stays loadable; a rank whose own checks fail stops every rank
#    with its error; ranks that disagree on the batch size stop with an error naming it.
# Arguments: -DTRAIN_RUN=<tool> -DDATA=<digits folder> -DWORK_DIR=<scratch folder>
#            -DMPIEXEC=<mpirun> "-DMPIEXEC_FLAGS=<flags;...>"

# Under AddressSanitizer (scripts/sanitize.sh) Open MPI's own allocations, made by plugins it
# unloads before exit, are reported as leaks that no suppression can name: leak checking is off
# for the MPI jobs (the single-process tests check xtnn's code for leaks); everything else stays on.
if(DEFINED ENV{ASAN_OPTIONS})
  set(ENV{ASAN_OPTIONS} "$ENV{ASAN_OPTIONS}:detect_leaks=0")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include(${CMAKE_CURRENT_LIST_DIR}/process_helpers.cmake)

# An MPI job of `ranks` processes of xtnn_train_run writing ${name}.xtnn and ${name}.txt (rank 0)
# and ${name}.xtnn.rank<r>, ${name}.txt.rank<r> (the others).
function(train_on_ranks ranks name)
  execute_process(COMMAND "${MPIEXEC}" ${MPIEXEC_FLAGS} -np ${ranks} "${TRAIN_RUN}" --distributed --threads 1
                          --data "${DATA}" --save "${WORK_DIR}/${name}.xtnn" --history "${WORK_DIR}/${name}.txt" ${ARGN}
                  RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output TIMEOUT 120)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "MPI run '${name}' on ${ranks} ranks failed (${result}):\n${output}")
  endif()
endfunction()

# A History without its validation columns: the ranks evaluate their shares of the validation
# samples, which sums them in another order than one process does.
function(expect_same_training_history a b what)
  file(READ "${WORK_DIR}/${a}" history_a)
  file(READ "${WORK_DIR}/${b}" history_b)
  string(REGEX REPLACE " val_[a-z_]+=[^ \n]+" "" history_a "${history_a}")
  string(REGEX REPLACE " val_[a-z_]+=[^ \n]+" "" history_b "${history_b}")
  if(NOT history_a STREQUAL history_b)
    message(FATAL_ERROR "${what}: training History differs:\n${history_a}\nvs\n${history_b}")
  endif()
  message(STATUS "ok: ${what}: the same training loss and accuracy in every epoch")
endfunction()

# Batches of 100 rows: every batch is cut at the same rows by 2 threads and by 2 ranks.
train_with("${TRAIN_RUN}" one_process_2_threads --threads 2 --batch-size 100)
train_on_ranks(2 ranks_2 --batch-size 100)
expect_same_file(ranks_2.xtnn ranks_2.xtnn.rank1 "2 ranks: model files of rank 0 and rank 1")
expect_same_file(ranks_2.txt ranks_2.txt.rank1 "2 ranks: History of rank 0 and rank 1")
expect_same_file(ranks_2.xtnn one_process_2_threads.xtnn "2 ranks of 1 thread vs 1 process of 2 threads: model files")
expect_same_training_history(ranks_2.txt one_process_2_threads.txt "2 ranks vs 1 process of 2 threads")

# With 2 ranks every reduction adds the same two numbers.
train_on_ranks(2 allreduce_2 --batch-size 100 --reduction allreduce)
expect_same_file(allreduce_2.xtnn ranks_2.xtnn "2 ranks: MPI_Allreduce vs xtnn's ring: model files")

train_with("${TRAIN_RUN}" one_process_3_threads --threads 3 --batch-size 100)
train_on_ranks(3 fixed_3 --batch-size 100 --reduction fixed_order)
expect_same_file(fixed_3.xtnn fixed_3.xtnn.rank2 "3 ranks, fixed order: model files of rank 0 and rank 2")
expect_same_file(fixed_3.xtnn one_process_3_threads.xtnn "3 ranks in fixed order vs 1 process of 3 threads: model files")
# The ring sums each chunk in an order of its own, fixed by the rank count: the same bits on
# every rank and in every run.
train_on_ranks(3 ring_3 --batch-size 100)
train_on_ranks(3 ring_3_again --batch-size 100)
expect_same_file(ring_3.xtnn ring_3.xtnn.rank1 "3 ranks, ring: model files of rank 0 and rank 1")
expect_same_file(ring_3.xtnn ring_3.xtnn.rank2 "3 ranks, ring: model files of rank 0 and rank 2")
expect_same_file(ring_3.xtnn ring_3_again.xtnn "3 ranks, ring: two runs")
# Ranks on one machine run the ring through shared memory; over messages it adds in the same order.
train_on_ranks(3 ring_3_messages --batch-size 100 --messages)
expect_same_file(ring_3.xtnn ring_3_messages.xtnn "3 ranks, ring: through shared memory vs over MPI messages")

# BatchNormalization normalizes each rank's share with its own statistics; the moving statistics
# are averaged over the ranks after every step, so the ranks still end with the same model.
train_on_ranks(2 batch_norm_2 --batch-size 100 --batch-norm)
expect_same_file(batch_norm_2.xtnn batch_norm_2.xtnn.rank1 "2 ranks with BatchNormalization: model files of rank 0 and rank 1")
train_on_ranks(2 batch_norm_2_messages --batch-size 100 --batch-norm --messages)
expect_same_file(batch_norm_2.xtnn batch_norm_2_messages.xtnn "2 ranks with BatchNormalization: shared memory vs messages")

# evaluate with the ranks: each evaluates its half of the samples; every rank gets the figures of
# all, which equal one process's to six digits.
train_with("${TRAIN_RUN}" one_process_evaluate --threads 2 --batch-size 100 --evaluate)
train_on_ranks(2 evaluate_2 --batch-size 100 --evaluate)
expect_same_file(evaluate_2.txt evaluate_2.txt.rank1 "2 ranks: History and evaluate figures of rank 0 and rank 1")
foreach(name one_process_evaluate evaluate_2)
  file(STRINGS "${WORK_DIR}/${name}.txt" ${name}_figures REGEX "^evaluate ")
endforeach()
if(NOT one_process_evaluate_figures MATCHES "accuracy=" OR NOT one_process_evaluate_figures STREQUAL evaluate_2_figures)
  message(FATAL_ERROR "evaluate on 2 ranks: '${evaluate_2_figures}', on one process: '${one_process_evaluate_figures}'")
endif()
message(STATUS "ok: evaluate on 2 ranks = on one process: ${evaluate_2_figures}")

# One thread computes each batch's gradient in one piece: the sums differ in their last bits.
train_with("${TRAIN_RUN}" one_process_1_thread --threads 1 --batch-size 100)
execute_process(COMMAND "${TRAIN_RUN}" --save "${WORK_DIR}/ranks_2.xtnn" --compare "${WORK_DIR}/one_process_1_thread.xtnn"
                        --data unused --history unused
                OUTPUT_VARIABLE difference OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE result)
if(NOT result EQUAL 0 OR NOT difference LESS 1e-6)
  message(FATAL_ERROR "2 ranks vs 1 process of 1 thread: largest weight difference ${difference} (${result}), allowed 1e-6")
endif()
message(STATUS "ok: 2 ranks vs 1 process of 1 thread: largest weight difference ${difference} (allowed 1e-6)")

# Resuming on another number of ranks.
train_with("${TRAIN_RUN}" straight_4 --threads 2 --batch-size 100 --epochs 4)
train_with("${TRAIN_RUN}" ranks_2_then_1 --threads 2 --batch-size 100 --epochs 4 --resume "${WORK_DIR}/ranks_2.xtnn")
expect_same_file(ranks_2_then_1.xtnn straight_4.xtnn "2 epochs on 2 ranks + 2 on 1 process vs 4 straight: model files")
train_on_ranks(2 one_then_ranks_2 --batch-size 100 --epochs 4 --resume "${WORK_DIR}/one_process_2_threads.xtnn")
expect_same_file(one_then_ranks_2.xtnn straight_4.xtnn "2 epochs on 1 process + 2 on 2 ranks vs 4 straight: model files")
expect_same_file(one_then_ranks_2.xtnn one_then_ranks_2.xtnn.rank1 "resumed on 2 ranks: model files of rank 0 and rank 1")

# Faults: the job must end with a message naming the rank within seconds (the timeout is a
# hang's bound, not a target).
function(expect_job_failure name pattern)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND "${MPIEXEC}" ${MPIEXEC_FLAGS} -np 2 "${TRAIN_RUN}" --distributed --threads 1 --data "${DATA}"
                          --save "${WORK_DIR}/${name}.xtnn" --history "${WORK_DIR}/${name}.txt" --epochs 3 ${ARGN}
                  RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output TIMEOUT 60)
  string(TIMESTAMP end "%s")
  math(EXPR seconds "${end} - ${start}")
  if(result EQUAL 0 OR result MATCHES "timeout")
    message(FATAL_ERROR "${name}: the job did not fail as it should (${result}) after ${seconds} s:\n${output}")
  endif()
  if(NOT output MATCHES "${pattern}")
    message(FATAL_ERROR "${name}: the job's output does not match '${pattern}':\n${output}")
  endif()
  message(STATUS "ok: ${name}: the job ended in ${seconds} s (exit ${result}) with '${CMAKE_MATCH_0}'")
endfunction()

expect_job_failure(throws "xtnn: rank 1 of 2 on [^:]+: fit failed: sabotaged at epoch 2, batch 4" --fail-rank 1
                   --checkpoint "${WORK_DIR}/throws_checkpoint.xtnn")
expect_job_failure(killed "process rank 1 [^\n]* exited on signal 9" --kill-rank 1
                   --checkpoint "${WORK_DIR}/killed_checkpoint.xtnn")
# Every rank throws, so whichever aborts the job first is heard: rank 0 naming rank 1, or rank 1 itself.
expect_job_failure(broken "rank (0 of 2 on [^:]+: xtnn_train_run: fit: rank 1 of 2 failed before training|1 of 2 on [^:]+: xtnn_train_run: fit): x has 1000 samples but y has shape [(]999, 10[)]"
                   --broken-rank 1)
expect_job_failure(mismatch "fit: the ranks disagree on batch_size: rank 0 of 2 has 64, rank 1 of 2 has 32" --mismatch-rank 1)
expect_job_failure(evaluate_mismatch "evaluate: the ranks disagree on the samples: rank 0 of 2 has 500, rank 1 of 2 has 499"
                   --evaluate --short-evaluation-rank 1)

# The checkpoints written before the faults (after epoch 1) load and training resumes from them.
foreach(fault throws killed)
  train_with("${TRAIN_RUN}" ${fault}_resumed --threads 2 --epochs 3 --resume "${WORK_DIR}/${fault}_checkpoint.xtnn")
  message(STATUS "ok: the checkpoint left by the '${fault}' job loads and training resumes from it")
endforeach()
