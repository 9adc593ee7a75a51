#include "alou/app/app.hpp"

int main(int argc, char** argv) { return alou::app::run_cli(argc, argv); }
