// The whole Keras-style workflow in one program: the book's model trained, evaluated,
// used for prediction, saved and loaded back. Run from the repository's root:
//
//   build/examples/keras_style

#include <cstdio>

#include <xtnn/xtnn.hpp>

int main() {
    xtnn::set_random_seed(42);
    auto [train, test] = xtnn::datasets::load_mnist("datasets/mnist-10k");  // x: (N,28,28) in [0,1], y: labels
    auto y_train = xtnn::to_categorical(train.y, 10);
    auto y_test = xtnn::to_categorical(test.y, 10);

    xtnn::Sequential model;
    model.add(xtnn::Dense(32, "relu", {28, 28}));    // Dense acts on the last axis, as in Keras
    model.add(xtnn::Dropout(0.1));
    model.add(xtnn::Dense(32, "relu"));
    model.add(xtnn::Dropout(0.1));
    model.add(xtnn::Flatten());
    model.add(xtnn::Dense(10, "softmax"));
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    model.summary();                                   // 10,954 parameters

    xtnn::History history = model.fit(train.x, y_train,
        {.batch_size = 64, .epochs = 8, .validation_data = {{test.x, y_test}}});
    auto scores = model.evaluate(test.x, y_test);      // {"loss": ..., "accuracy": ...}
    xt::xarray<float> probabilities = model.predict(test.x);
    model.save("mnist_mlp.xtnn");
    auto restored = xtnn::load_model("mnist_mlp.xtnn");

    // Not in the design sketch: show that the restored model is the same model.
    const bool same = restored.predict(test.x) == probabilities;
    std::printf("test accuracy %.4f, loss %.4f; restored model gives %s predictions\n", scores["accuracy"], scores["loss"],
                same ? "identical" : "DIFFERENT");
    return same ? 0 : 1;
}
