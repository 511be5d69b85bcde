package bench

import (
	"bufio"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// conn is one worker's own keep-alive HTTP/1.1 connection. Each worker owns
// exactly one, so "N connections" means N sockets, with no pool between the
// generator and the wire (a pool would queue requests where we cannot see
// it) and no background goroutines to outlive the run.
type conn struct {
	addr    string
	timeout time.Duration
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
}

func newConn(addr string, timeout time.Duration) *conn {
	return &conn{addr: addr, timeout: timeout}
}

// do sends req and reads resp, dialling first when needed. Any error closes
// the connection so the next request starts on a fresh one.
func (c *conn) do(req *fasthttp.Request, resp *fasthttp.Response) error {
	if c.c == nil {
		nc, err := net.DialTimeout("tcp", c.addr, c.timeout)
		if err != nil {
			return err
		}
		c.c = nc
		if c.br == nil {
			c.br, c.bw = bufio.NewReaderSize(nc, 16<<10), bufio.NewWriterSize(nc, 16<<10)
		} else {
			c.br.Reset(nc)
			c.bw.Reset(nc)
		}
	}
	if err := c.c.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		c.close()
		return err
	}
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil {
		err = resp.Read(c.br)
	}
	if err != nil || resp.ConnectionClose() {
		c.close()
	}
	return err
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}
