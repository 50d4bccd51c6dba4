# Determinism and exact resume across processes, with the xtnn_train_run tool:
#  - two processes with the same seed write byte-identical model files and History;
#  - another seed gives another model;
#  - 4 epochs straight equal 2 epochs, save, and 2 more in a new process that loads the file:
#    the same bytes (weights, Adam's slots and step count, random state) and the same History.
# Arguments: -DTRAIN_RUN=<tool> -DDATA=<digits folder> -DWORK_DIR=<scratch folder>

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(train name)
  execute_process(COMMAND "${TRAIN_RUN}" --data "${DATA}" --save "${WORK_DIR}/${name}.xtnn"
                          --history "${WORK_DIR}/${name}.txt" ${ARGN}
                  RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "run '${name}' failed: ${result}")
  endif()
endfunction()

function(expect_same_file a b what)
  file(SHA256 "${WORK_DIR}/${a}" hash_a)
  file(SHA256 "${WORK_DIR}/${b}" hash_b)
  if(NOT hash_a STREQUAL hash_b)
    message(FATAL_ERROR "${what}: ${a} and ${b} differ")
  endif()
  message(STATUS "ok: ${what} (${a} == ${b}, sha256 ${hash_a})")
endfunction()

train(first --seed 42 --epochs 2)
train(second --seed 42 --epochs 2)
expect_same_file(first.xtnn second.xtnn "same seed, two processes: model files")
expect_same_file(first.txt second.txt "same seed, two processes: History")

train(other --seed 43 --epochs 2)
file(SHA256 "${WORK_DIR}/first.xtnn" hash_first)
file(SHA256 "${WORK_DIR}/other.xtnn" hash_other)
if(hash_first STREQUAL hash_other)
  message(FATAL_ERROR "seeds 42 and 43 gave the same model: the seed is ignored")
endif()
message(STATUS "ok: another seed gives another model")

train(straight --seed 42 --epochs 4)
train(resumed --resume "${WORK_DIR}/first.xtnn" --epochs 4)
expect_same_file(straight.xtnn resumed.xtnn "4 epochs straight vs 2 + resume in a new process: model files")
file(STRINGS "${WORK_DIR}/straight.txt" straight_epochs)
file(STRINGS "${WORK_DIR}/resumed.txt" resumed_epochs)
list(SUBLIST straight_epochs 2 2 straight_tail)
if(NOT straight_tail STREQUAL resumed_epochs)
  message(FATAL_ERROR "History differs after resume:\n${straight_tail}\nvs\n${resumed_epochs}")
endif()
message(STATUS "ok: resumed History equals epochs 3-4 of the straight run")
