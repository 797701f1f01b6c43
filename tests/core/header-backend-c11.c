/* The backend header on its own, in strict C11 (-std=c11 -pedantic -Werror). */
#define PROCREG_ENABLE_BACKEND 1
#include <procreg/backend.h>

int procreg_backend_header_test_main(void);

int procreg_backend_header_test_main(void)
{
    return PROCREG_BACKEND_VERSION - 1;
}
