/* `procreg metrics` (metrics.c), called by the command line (procreg.c). */
#ifndef PROCREG_TOOLS_METRICS_H
#define PROCREG_TOOLS_METRICS_H

#include <procreg/procreg.h>

/* Serve the figures of @reg at http://@listen/metrics (@listen is
 * "ADDRESS:PORT", "[V6ADDRESS]:PORT"; port 0 picks a free one) while @run
 * runs the default main context, printing the URL on stdout first.
 * Returns 0, or PROCREG_EINVAL (a bad @listen) or PROCREG_ERROR_FAILED (it
 * cannot listen there) with @error set. */
int metrics_serve(procreg *reg, const char *listen, void (*run)(void),
                  GError **error);

#endif
