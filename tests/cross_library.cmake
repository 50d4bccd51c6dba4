# A run saved by one build resumes exactly in the other: the g++/libstdc++ build and the
# clang/libc++ build train the same seed bit for bit alike, and the random generator's state is
# stored in xtnn's own form, so
#  - both builds write byte-identical model files for the same run, of the book's model and of a
#    small CNN with BatchNormalization;
#  - 2 epochs in one build, then 2 more in the other (LoadOptions::restore_random_state) give
#    the same file and History as 4 epochs straight, in both directions.
# Arguments: -DTRAIN_RUN=<this build's tool> -DPEER_TRAIN_RUN=<the other build's tool>
#            -DDATA=<digits folder> -DWORK_DIR=<scratch folder>

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

include(${CMAKE_CURRENT_LIST_DIR}/process_helpers.cmake)

train_with("${TRAIN_RUN}" own_half --seed 42 --epochs 2)
train_with("${PEER_TRAIN_RUN}" peer_half --seed 42 --epochs 2)
expect_same_file(own_half.xtnn peer_half.xtnn "the same run in both builds: model files")
expect_same_file(own_half.txt peer_half.txt "the same run in both builds: History")

# A small CNN with BatchNormalization: the direct and Winograd convolution kernels, and the SIMD
# loops of batch normalization, pooling and bias, give the same bits in both builds too.
train_with("${TRAIN_RUN}" own_cnn --cnn --seed 42 --epochs 2)
train_with("${PEER_TRAIN_RUN}" peer_cnn --cnn --seed 42 --epochs 2)
expect_same_file(own_cnn.xtnn peer_cnn.xtnn "a CNN in both builds: model files")
expect_same_file(own_cnn.txt peer_cnn.txt "a CNN in both builds: History")

train_with("${TRAIN_RUN}" own_straight --seed 42 --epochs 4)
train_with("${PEER_TRAIN_RUN}" peer_straight --seed 42 --epochs 4)
expect_same_file(own_straight.xtnn peer_straight.xtnn "4 epochs in both builds: model files")

train_with("${TRAIN_RUN}" own_resumes_peer --resume "${WORK_DIR}/peer_half.xtnn" --epochs 4)
expect_same_file(peer_straight.xtnn own_resumes_peer.xtnn "resumed in this build from the other's file: model files")
expect_history_tail(peer_straight.txt own_resumes_peer.txt "resumed in this build from the other's file")

train_with("${PEER_TRAIN_RUN}" peer_resumes_own --resume "${WORK_DIR}/own_half.xtnn" --epochs 4)
expect_same_file(own_straight.xtnn peer_resumes_own.xtnn "resumed in the other build from this one's file: model files")
expect_history_tail(own_straight.txt peer_resumes_own.txt "resumed in the other build from this one's file")
