// The C API of librados (Ceph's object store client), imported into Swift by CairnRADOS.
#include <rados/librados.h>
