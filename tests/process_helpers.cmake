# Helpers of the whole-process tests (processes.cmake, cross_library.cmake): training runs of
# xtnn_train_run into WORK_DIR, and byte-for-byte comparisons of what they wrote.

# Runs `tool` (an xtnn_train_run) writing ${name}.xtnn and ${name}.txt; extra arguments follow.
function(train_with tool name)
  execute_process(COMMAND "${tool}" --data "${DATA}" --save "${WORK_DIR}/${name}.xtnn"
                          --history "${WORK_DIR}/${name}.txt" ${ARGN}
                  RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "run '${name}' with ${tool} failed: ${result}")
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

# The History of a 2-epoch resumed run must equal epochs 3-4 of the straight run.
function(expect_history_tail straight resumed what)
  file(STRINGS "${WORK_DIR}/${straight}" straight_epochs)
  file(STRINGS "${WORK_DIR}/${resumed}" resumed_epochs)
  list(SUBLIST straight_epochs 2 2 straight_tail)
  if(NOT straight_tail STREQUAL resumed_epochs)
    message(FATAL_ERROR "${what}: History differs:\n${straight_tail}\nvs\n${resumed_epochs}")
  endif()
  message(STATUS "ok: ${what}: History equals epochs 3-4 of the straight run")
endfunction()
