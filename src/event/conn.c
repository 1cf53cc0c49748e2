/* stub: being written */
typedef int tern_stub_conn;
