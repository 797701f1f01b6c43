/* The public header on its own, in strict C11 (-std=c11 -pedantic -Werror). */
#include <procreg/procreg.h>

int procreg_header_test_main(void);

int procreg_header_test_main(void)
{
    procreg_owner o = {0};
    return (int)o.pid + PROCREG_OK;
}
