// The public header compiles as C++ (extern "C", no C-only constructs): built with the
// example so that a C++ program knows it can embed a site.
#include <fedtune/fedtune.h>

#include <cstdio>

int main() {
    fedtune_metrics m = {};
    m.size = sizeof m;
    fedtune_config *c = nullptr;
    int rc = fedtune_config_new(&c);
    if (!rc) rc = fedtune_config_set(c, "seed", "7");
    std::printf("libfedtune %s from C++: %s\n", fedtune_version(), fedtune_strerror(rc));
    fedtune_config_free(&c);
    return rc;
}
