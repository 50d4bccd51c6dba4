# Determinism and exact resume across processes, with the xtnn_train_run tool:
#  - two processes with the same seed write byte-identical model files and History;
#  - another seed gives another model;
#  - 4 epochs straight equal 2 epochs, save, and 2 more in a new process that loads the file:
#    the same bytes (weights, Adam's slots and step count, random state) and the same History.
# Arguments: -DTRAIN_RUN=<tool> -DDATA=<digits folder> -DWORK_DIR=<scratch folder>

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include(${CMAKE_CURRENT_LIST_DIR}/process_helpers.cmake)

train_with("${TRAIN_RUN}" first --seed 42 --epochs 2)
train_with("${TRAIN_RUN}" second --seed 42 --epochs 2)
expect_same_file(first.xtnn second.xtnn "same seed, two processes: model files")
expect_same_file(first.txt second.txt "same seed, two processes: History")

train_with("${TRAIN_RUN}" other --seed 43 --epochs 2)
file(SHA256 "${WORK_DIR}/first.xtnn" hash_first)
file(SHA256 "${WORK_DIR}/other.xtnn" hash_other)
if(hash_first STREQUAL hash_other)
  message(FATAL_ERROR "seeds 42 and 43 gave the same model: the seed is ignored")
endif()
message(STATUS "ok: another seed gives another model")

train_with("${TRAIN_RUN}" straight --seed 42 --epochs 4)
train_with("${TRAIN_RUN}" resumed --resume "${WORK_DIR}/first.xtnn" --epochs 4)
expect_same_file(straight.xtnn resumed.xtnn "4 epochs straight vs 2 + resume in a new process: model files")
expect_history_tail(straight.txt resumed.txt "4 epochs straight vs 2 + resume in a new process")
