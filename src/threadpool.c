/* Native ThreadPoolExecutor (placeholder until the pool lands). */
#include "cfutures.h"

int
cf_threadpool_module_init(PyObject *mod, cf_state *st)
{
    return 0;
}
