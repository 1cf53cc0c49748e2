/* stub: being written */
typedef int tern_stub_smtp_server;
