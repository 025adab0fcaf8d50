#include "cairn_io.h"
